"""How training sets are joined: the point-in-time (AS-OF) join and the typed training-set spec."""
