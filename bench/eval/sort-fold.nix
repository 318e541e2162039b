# sort, genList and foldl' over 10^5 / 10^6 elements
let
  xs = builtins.genList (i: (i * 7919) - (i / 1000) * 7919000) 100000;
  sorted = builtins.sort builtins.lessThan xs;
  sum = builtins.foldl' (a: b: a + b) 0 (builtins.genList (i: i) 1000000);
in
[ (builtins.head sorted) (builtins.elemAt sorted 99999) sum ]
