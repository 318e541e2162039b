builtins.split "[ab" "a"
