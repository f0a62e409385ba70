"""`python -m khala_client.cli`."""

import sys

from khala_client.cli.main import main

sys.exit(main())
