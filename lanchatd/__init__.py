"""lanchatd: the single-loop lanchat daemon."""
