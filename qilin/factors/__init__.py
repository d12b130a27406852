"""Factor operators, indicators, the expression language, Alpha158, calculation and evaluation."""
