"""Training-free rows of the papers' tables: a baseline is a method whose `fit` learns nothing."""
