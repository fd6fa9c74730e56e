// SHA-256 of a file, as lowercase hex (FIPS 180-4), to check a bundle against its manifest.
#pragma once
#include <string>

namespace pipeline {
std::string sha256_file(const std::string& path);
}
