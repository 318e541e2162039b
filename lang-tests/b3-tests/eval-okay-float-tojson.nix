# toJSON writes floats the way nlohmann::json does (current Nix; Nix 2.8
# still used %g here).
builtins.toJSON [
  1.0
  0.1
  1.0e-5
  0.0001
  1234567.0
  1.0e20
  0.3
  (1.0 / 3.0)
  1.0e15
  1.0e14
  123.456
  (0.0 - 2.5)
  (0.1 + 0.2)
]
