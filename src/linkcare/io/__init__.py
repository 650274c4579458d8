"""Reading extracts and writing outputs safely."""
