// A small JSON reader: enough for a bundle's manifest.json and golden.json (no external dependency).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pipeline {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  const Json& operator[](const std::string& key) const;  // throws if missing
  bool has(const std::string& key) const { return type == Type::Object && object.count(key) > 0; }
  static Json parse(const std::string& text);
  static Json read_file(const std::string& path);
};

}  // namespace pipeline
