"""Pure gateway rules: cursors, sequencing, wire encoding, flow control, principals."""
