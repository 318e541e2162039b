# Sourced by bench/build/*.sh: write_shapes FILE N writes the benchmark's
# expression to FILE: `chain` (N derivations, each referring to the one
# before) and `fan` (N independent leaves and a root that refers to all of
# them), all built by /bin/sh, named after a `nonce` argument so that every
# round's derivations are new to both stores.
write_shapes() {
  cat > "$1" <<NIX
{ nonce, n ? $2 }:
let
  mk = name: script: derivation {
    inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ];
  };
  chainStep = i: prev: mk "chain-\${nonce}-\${toString i}" "echo \${prev} > \$out";
  chain = builtins.foldl' (prev: i: chainStep i prev) "start" (builtins.genList (i: i + 1) n);
  leaves = builtins.genList (i: mk "leaf-\${nonce}-\${toString i}" "echo \${toString i} > \$out") n;
in {
  inherit chain;
  fan = mk "fan-\${nonce}" "echo \${toString leaves} > \$out";
}
NIX
}
