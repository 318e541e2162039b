// Oracle for b3's regex differential test: runs libstdc++'s std::regex
// (extended grammar, as Nix uses it) on test cases read from stdin.
// Input, one case per line: <pattern hex> <subject hex> (an empty hex
// string is written as "-").
// Output, one line per case:
//   E<error code>                            pattern rejected
//   M<groups>|S<match>;<match>;...           otherwise
// where <groups> is "N" for no regex_match or the groups 1..n as
// " s,e" / " -", and each iterator match is
// "prefix_start,start,end" followed by its groups 1..n.
// Each case runs in a forked child with a time limit, because libstdc++'s
// matcher is exponential (or overflows its stack) on some patterns; such a
// case prints "T".
// Build with a strict -std=c++17 (as Nix is), which makes escapes of
// ordinary characters an error.
#include <cstdio>
#include <sys/wait.h>
#include <unistd.h>
#include <iostream>
#include <regex>
#include <string>

static std::string unhex(const std::string &h) {
    std::string out;
    if (h == "-") return out;
    for (size_t i = 0; i + 1 < h.size(); i += 2)
        out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
    return out;
}

template <typename M>
static void groups(const M &m, const char *base, std::string &out) {
    for (size_t i = 1; i < m.size(); i++) {
        if (!m[i].matched) {
            out += " -";
        } else {
            out += " " + std::to_string(m[i].first - base) + "," +
                   std::to_string(m[i].second - base);
        }
    }
}

static std::string run_case(const std::string &line);

int main() {
    std::ios::sync_with_stdio(false);
    std::string line;
    while (std::getline(std::cin, line)) {
        int fds[2];
        if (pipe(fds) != 0) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            alarm(1);
            std::string out = run_case(line) + "\n";
            if (write(fds[1], out.data(), out.size()) < 0) _exit(1);
            _exit(0);
        }
        close(fds[1]);
        std::string out;
        char buf[4096];
        ssize_t n;
        while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, n);
        close(fds[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out.empty()) out = "T\n";
        std::cout << out;
    }
    return 0;
}

static std::string run_case(const std::string &line) {
    {
        auto sp = line.find(' ');
        std::string pat = unhex(line.substr(0, sp));
        std::string subj = unhex(line.substr(sp + 1));
        std::string out;
        try {
            std::regex re(pat, std::regex::extended);
            const char *b = subj.data();
            const char *e = b + subj.size();
            std::cmatch m;
            out += "M";
            if (std::regex_match(b, e, m, re))
                groups(m, b, out);
            else
                out += "N";
            out += "|S";
            for (auto it = std::cregex_iterator(b, e, re); it != std::cregex_iterator(); ++it) {
                const auto &mm = *it;
                out += std::to_string(mm.prefix().first - b) + "," +
                       std::to_string(mm[0].first - b) + "," + std::to_string(mm[0].second - b);
                groups(mm, b, out);
                out += ";";
            }
        } catch (const std::regex_error &err) {
            out = "E" + std::to_string(static_cast<int>(err.code()));
        }
        return out;
    }
}
