# toString and interpolation of floats use %f (std::to_string).
[
  (toString 1.0)
  (toString 0.1)
  (toString 1.0e-7)
  (toString 1234567.0)
  (toString 2.5e20)
  (toString (0.0 - 1.5))
  "${toString 3.25}x"
]
