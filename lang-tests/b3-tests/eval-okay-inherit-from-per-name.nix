# Nix 2.8 evaluates the source of `inherit (e) a b` once per inherited name
# (as `a = e.a; b = e.b;`). A source that is a call therefore yields two
# distinct sets here, and sets holding functions compare equal only when
# they are the same value. nix-env -qa's de-duplication depends on this.
let
  mk = _: let c = { f = x: x; }; in { a = c; b = c; };
  t = { inherit (mk 1) a b; };
  u = mk 1;
  r = rec { src = mk 1; inherit (src) a b; };
in
[ (t.a == t.b) (u.a == u.b) (r.a == r.b) ]
