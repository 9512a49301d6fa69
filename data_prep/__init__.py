"""Preference-pair data preparation: source readers and the harmless + helpful mixture builder."""
