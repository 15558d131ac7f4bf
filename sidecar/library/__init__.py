"""The enrolled cars and tagged photos: a SQLite database (the truth) and
one rebuildable usearch index per embedding model beside it."""
