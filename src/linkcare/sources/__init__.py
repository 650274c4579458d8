"""Reading extracts: each file checked and read as text, its linkage fields standardised, its rows
checked (rejects with reasons, never values); and pseudonymisation for the data controller."""
