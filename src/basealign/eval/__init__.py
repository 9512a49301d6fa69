"""`basealign eval`: preference metrics, generations aligned vs base, judges, lm-eval."""
