"""What the projector does: project delivered events, publish committed frames,
rebuild, retention, drift checks, partition ownership and gauge sampling."""
