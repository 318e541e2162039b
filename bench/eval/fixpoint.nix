# a module-system-like fixpoint over a large attribute set
let
  n = 3000;
  names = builtins.genList (i: "opt${toString i}") n;
  modules = builtins.genList (
    i: self: {
      "opt${toString i}" = if i == 0 then 1 else self."opt${toString (i - 1)}" + 1;
    }
  ) n;
  merge = self: builtins.foldl' (acc: m: acc // m self) { } modules;
  fix = f: let x = f x; in x;
  config = fix merge;
in
builtins.foldl' (s: k: s + config.${k}) 0 names
