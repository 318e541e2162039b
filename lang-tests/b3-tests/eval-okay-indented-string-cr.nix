# Nix 2.8 keeps CR verbatim in indented strings, and reads CR and CR LF
# as LF elsewhere (nixpkgs adobe-flex-sdk depends on it).
let s = ''
  a  b
    c
''; in [ s "xy
z" ]
