"""The extract's rules and shape: the schema, labels, dates, the patient split and lag-1 statistics (pandas; no torch)."""
