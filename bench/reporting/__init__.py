"""Reports built from result JSONs alone: tables, figures, the front page, side-by-side comparisons and the
regression gate. Imports no runner module: a report needs the records, never the code that ran them."""
