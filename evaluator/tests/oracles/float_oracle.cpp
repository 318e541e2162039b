// Oracle for b3's float formatting differential test. Reads one double per
// line as 16 hex digits (its IEEE-754 bits) and prints
//   <printf %g>|<printf %f>|<nlohmann::json dump>
// i.e. what Nix prints for a float value, what `toString` gives, and what
// `builtins.toJSON` gives.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

int main() {
    char line[64];
    static char buf[1024];
    while (std::fgets(line, sizeof line, stdin)) {
        uint64_t bits = std::strtoull(line, nullptr, 16);
        double d;
        std::memcpy(&d, &bits, sizeof d);
        std::printf("%g|", d);
        std::snprintf(buf, sizeof buf, "%f", d);
        std::fputs(buf, stdout);
        std::printf("|%s\n", nlohmann::json(d).dump().c_str());
    }
    return 0;
}
