"""Risk of emergency admission: features as of an index date, models, evaluation and scoring."""
