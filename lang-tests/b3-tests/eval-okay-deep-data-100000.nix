# A linked list 100000 cells deep, walked iteratively with
# genericClosure (no deep recursion in the language), must not overflow
# any stack in the evaluator.
let
  long = builtins.genList (x: x) 100000;
  reversed = builtins.foldl' (tail: head: { inherit head tail; }) null long;
  cells = builtins.genericClosure {
    startSet = [ { key = 0; node = reversed; } ];
    operator =
      item:
      if item.node == null then [ ] else [ { key = item.key + 1; node = item.node.tail; } ];
  };
in
[
  (builtins.length cells)
  (builtins.elemAt cells 1).node.head
  (builtins.elemAt cells 100000).node
]
