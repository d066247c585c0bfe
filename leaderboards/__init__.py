"""Table specs, the papers' reported numbers and golden results files."""
