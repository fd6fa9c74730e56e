#include "json.hpp"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace pipeline {
namespace {

struct Parser {
  const std::string& s;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i));
  }
  void ws() { while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i; }
  bool eat(char c) { ws(); if (i < s.size() && s[i] == c) { ++i; return true; } return false; }
  void expect(char c) { if (!eat(c)) fail(std::string("expected '") + c + "'"); }

  std::string str() {
    expect('"');
    std::string out;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c != '\\') { out += c; continue; }
      if (i >= s.size()) fail("bad escape");
      char e = s[i++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {  // keep ASCII; other code points as UTF-8
          unsigned code = std::stoul(s.substr(i, 4), nullptr, 16);
          i += 4;
          if (code < 0x80) out += static_cast<char>(code);
          else if (code < 0x800) { out += static_cast<char>(0xC0 | (code >> 6)); out += static_cast<char>(0x80 | (code & 0x3F)); }
          else { out += static_cast<char>(0xE0 | (code >> 12)); out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
                 out += static_cast<char>(0x80 | (code & 0x3F)); }
          break;
        }
        default: out += e;
      }
    }
    expect('"');
    return out;
  }

  Json value() {
    ws();
    if (i >= s.size()) fail("unexpected end");
    Json v;
    char c = s[i];
    if (c == '{') {
      ++i;
      v.type = Json::Type::Object;
      if (eat('}')) return v;
      do { std::string key = str(); expect(':'); v.object[key] = value(); } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++i;
      v.type = Json::Type::Array;
      if (eat(']')) return v;
      do { v.array.push_back(value()); } while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.type = Json::Type::String;
      v.string = str();
    } else if (s.compare(i, 4, "true") == 0) { i += 4; v.type = Json::Type::Bool; v.boolean = true; }
    else if (s.compare(i, 5, "false") == 0) { i += 5; v.type = Json::Type::Bool; }
    else if (s.compare(i, 4, "null") == 0) { i += 4; }
    else if (s.compare(i, 3, "NaN") == 0) { i += 3; v.type = Json::Type::Number; v.number = std::nan(""); }
    else {
      const char* begin = s.c_str() + i;
      char* end = nullptr;
      v.number = std::strtod(begin, &end);
      if (end == begin) fail("unexpected character");
      v.type = Json::Type::Number;
      i += static_cast<size_t>(end - begin);
    }
    return v;
  }
};

}  // namespace

const Json& Json::operator[](const std::string& key) const {
  auto it = object.find(key);
  if (type != Type::Object || it == object.end()) throw std::runtime_error("JSON: missing key '" + key + "'");
  return it->second;
}

Json Json::parse(const std::string& text) {
  Parser p{text};
  Json v = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return v;
}

Json Json::read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot be opened");
  std::stringstream buffer;
  buffer << f.rdbuf();
  return parse(buffer.str());
}

}  // namespace pipeline
