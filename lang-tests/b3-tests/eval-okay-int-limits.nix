# 64-bit integer edge cases that do not overflow.
[
  9223372036854775807
  (-9223372036854775807 - 1)
  (builtins.div (-7) 2)
  (builtins.div 7 (-2))
  (-7 / 2)
  (builtins.bitAnd (-1) 255)
  (builtins.bitXor 5 3)
  (builtins.bitOr 4 1)
  (builtins.lessThan (-1) 0)
  (9223372036854775807 - 9223372036854775807)
  (4611686018427387903 * 2)
  (builtins.fromJSON "-9223372036854775808")
]
