"""What each kind of extract means: its default event columns, and which of them are required."""
