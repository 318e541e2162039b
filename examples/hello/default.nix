# A first expression for b3: evaluates and instantiates without a builder yet.
derivation {
  name = "hello";
  system = "x86_64-linux";
  builder = "/bin/sh";
  args = [ "-c" "echo hi > $out" ];
}
