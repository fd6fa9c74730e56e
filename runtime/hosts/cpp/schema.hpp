// Check a JSON value against a JSON Schema: the subset the bundle's manifest.schema.json uses (type, enum,
// anyOf, properties, required, additionalProperties, items, minimum), as the Python runtime and the JS kits do.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace pipeline {

// "field 'input.channels' must be an integer, got \"two\"", or nothing when `value` conforms.
std::optional<std::string> schema_error(const nlohmann::json& schema, const nlohmann::json& value,
                                        const std::string& path = "");

}  // namespace pipeline
