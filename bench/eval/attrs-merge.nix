# attrset merging in a loop: 20 000 successive `//` updates
let
  step = acc: i: acc // { "k${toString (i - (i / 500) * 500)}" = i; last = i; };
in
builtins.foldl' step { } (builtins.genList (i: i) 20000)
