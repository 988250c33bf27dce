"""`tiesmerge demo`: real specialists on the embedded base, merged three ways and evaluated end to end."""
