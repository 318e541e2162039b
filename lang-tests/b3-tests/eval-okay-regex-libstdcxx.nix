# builtins.match / builtins.split follow libstdc++'s std::regex (POSIX
# extended grammar, first path to the longest match for captures).
let
  m = builtins.match;
  s = builtins.split;
in
[
  (m "(a|ab)(c|bc)" "abc")
  (m "(b|b*)b*" "bb")
  (m "(x*)*" "xx")
  (m "\\.*(.*)" ".keep")
  (m "a|ab" "ab")
  (m "(.)" "é")
  (m "(..)" "é")
  (m "a.b" "a\nb")
  (m "[\\-]+" "\\")
  (m "a+?" "aaa")
  (m "\\{" "{")
  (m "[[:alpha:]_]+([0-9]*)" "foo_bar42")
  (m "[]a]+" "]a]")
  (m "[^]a]+" "bcd")
  (m "[[.hyphen.]]+" "--")
  (m "[[=a=]]+" "aA")
  (m "a{2,3}" "aaaa")
  (m "(a|(b))*" "abab")
  (m "((a)|b)*" "ab")
  (m "()" "")
  (m "(|a)+" "aa")
  (m "^a$" "a")
  (m "(.*)-([0-9]+)\\.([0-9]+)" "pkg-1.2")
  (s "(a|ab)" "xabx")
  (s "a*" "baaac")
  (s "b*" "abba")
  (s "^" "ab")
  (s "$" "ab")
  (s "" "ab")
  (s "(a)|(c)" "abc")
  (s "[[:space:]]+" "a  b \t c\n")
  (s "(x)?" "axb")
]
