# string building: concatenation, interpolation and replaceStrings
let
  parts = builtins.genList (i: "item-${toString i}") 50000;
  joined = builtins.concatStringsSep "," parts;
  replaced = builtins.replaceStrings [ "item" ] [ "x" ] joined;
  acc = builtins.foldl' (s: p: if builtins.stringLength s > 2000 then p else s + p) "" parts;
in
[ (builtins.stringLength joined) (builtins.stringLength replaced) (builtins.stringLength acc) ]
