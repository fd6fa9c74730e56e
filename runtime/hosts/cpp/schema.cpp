#include <cmath>
#include "schema.hpp"

#include <algorithm>

namespace pipeline {
namespace {

using nlohmann::json;

std::string type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  // beyond 2^53 JavaScript reads a float and so does every kit's check: a number, not an integer
  if ((v.is_number_integer() || v.is_number_unsigned()) && std::abs(v.get<double>()) <= 9007199254740992.0)
    return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

std::string describe(const json& schema) {
  if (schema.contains("enum")) {
    std::string out = "one of ";
    for (size_t i = 0; i < schema["enum"].size(); ++i) out += (i ? ", " : "") + schema["enum"][i].dump();
    return out;
  }
  if (schema.contains("anyOf")) {
    std::string out;
    for (size_t i = 0; i < schema["anyOf"].size(); ++i) out += (i ? " or " : "") + describe(schema["anyOf"][i]);
    return out;
  }
  static const json names = {{"integer", "an integer"}, {"number", "a number"}, {"string", "a string"},
                             {"boolean", "true or false"}, {"null", "null"}, {"array", "a list"},
                             {"object", "an object"}};
  static const json plural = {{"integer", "integers"}, {"number", "numbers"}, {"string", "strings"},
                              {"boolean", "booleans"}, {"null", "nulls"}, {"array", "lists"}, {"object", "objects"}};
  if (!schema.contains("type")) return "any value";
  std::string type = schema["type"];
  if (type == "array" && schema.contains("items") && schema["items"].contains("type"))
    return "a list of " + plural.value(schema["items"]["type"].get<std::string>(), "values");
  return names.value(type, "any value");
}

std::string bad(const std::string& path, const std::string& must, const json* got) {
  std::string found = got ? got->dump() : "nothing";
  if (found.size() > 60) found = found.substr(0, 60);
  return "field '" + path + "' must be " + must + ", got " + found;
}

std::string join(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

}  // namespace

std::optional<std::string> schema_error(const json& schema, const json& value, const std::string& path) {
  if (schema.contains("anyOf")) {
    for (const auto& option : schema["anyOf"])
      if (!schema_error(option, value, path)) return std::nullopt;
    // the option of the value's own JSON type names the deeper problem (as the Python runtime does)
    std::string got = type_of(value);
    for (const auto& option : schema["anyOf"]) {
      std::string want = option.value("type", "");
      if (!want.empty() && want != "null" && (want == got || (want == "number" && got == "integer")))
        return schema_error(option, value, path);
    }
    return bad(path, describe(schema), &value);
  }
  if (schema.contains("enum")) {
    const auto& options = schema["enum"];
    if (std::find(options.begin(), options.end(), value) == options.end()) return bad(path, describe(schema), &value);
  }
  if (schema.contains("type")) {
    std::string want = schema["type"], got = type_of(value);
    if (!(got == want || (want == "number" && got == "integer"))) return bad(path, describe(schema), &value);
  }
  if (schema.contains("minimum") && value.is_number() && value.get<double>() < schema["minimum"].get<double>())
    return bad(path, describe(schema) + " >= " + schema["minimum"].dump(), &value);
  if (value.is_array() && schema.contains("items")) {
    for (size_t i = 0; i < value.size(); ++i)
      if (auto err = schema_error(schema["items"], value[i], path + "[" + std::to_string(i) + "]")) return err;
  }
  if (value.is_object()) {
    if (schema.contains("required"))
      for (const auto& key : schema["required"])
        if (!value.contains(key.get<std::string>())) {
          const json& properties = schema.value("properties", json::object());
          return bad(join(path, key), describe(properties.value(key.get<std::string>(), json::object())), nullptr);
        }
    for (const auto& [key, item] : value.items()) {
      if (schema.contains("properties") && schema["properties"].contains(key)) {
        if (auto err = schema_error(schema["properties"][key], item, join(path, key))) return err;
      } else if (schema.contains("additionalProperties")) {
        const json& extra = schema["additionalProperties"];
        if (extra.is_boolean() && !extra.get<bool>())
          return bad(join(path, key), "absent (it is not part of this bundle format)", &item);
        if (extra.is_object())
          if (auto err = schema_error(extra, item, join(path, key))) return err;
      }
    }
  }
  return std::nullopt;
}

}  // namespace pipeline
