"""Check evaluators, one module per check kind; :mod:`grader.evaluate` dispatches to them."""
