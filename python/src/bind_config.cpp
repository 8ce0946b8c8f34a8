// moe.MOEConfig: every field of moe/config_fields.hpp as a property, so a field added
// there appears in Python without a change here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "moe/config.hpp"
#include "moe/config_fields.hpp"
#include "moe/error.hpp"

namespace py = pybind11;

namespace moe::python {
namespace {

py::object get_field(const ConfigField& f, const MOEConfig& c) {
  const FieldValue v = f.get(c);
  switch (f.type) {
    case FieldType::Int: return py::int_(std::get<std::int64_t>(v));
    case FieldType::Float: return py::float_(std::get<double>(v));
    case FieldType::Bool: return py::bool_(std::get<std::int64_t>(v) != 0);
    case FieldType::Choice: return py::str(std::get<std::string>(v));
  }
  return py::none();
}

void set_field(const ConfigField& f, MOEConfig& c, const py::handle& value) {
  const std::string shown = py::repr(value);
  auto wrong = [&](const char* expected) {
    detail::fail("MOEConfig", f.name, " = ", shown, "; expected ", expected);
  };
  switch (f.type) {
    case FieldType::Int:
      if (py::isinstance<py::bool_>(value) || !py::isinstance<py::int_>(value)) wrong("an integer");
      f.set(c, FieldValue{value.cast<std::int64_t>()});
      break;
    case FieldType::Float:
      if (py::isinstance<py::bool_>(value) || !(py::isinstance<py::float_>(value) || py::isinstance<py::int_>(value)))
        wrong("a number");
      f.set(c, FieldValue{value.cast<double>()});
      break;
    case FieldType::Bool:
      if (!py::isinstance<py::bool_>(value)) wrong("True or False");
      f.set(c, FieldValue{std::int64_t{value.cast<bool>() ? 1 : 0}});
      break;
    case FieldType::Choice:
      if (!py::isinstance<py::str>(value)) wrong("a name (a str)");
      f.set(c, FieldValue{value.cast<std::string>()});  // throws naming the valid names
      break;
  }
}

std::string field_names() {
  std::string names;
  for (const ConfigField& f : config_fields()) names += (names.empty() ? "" : ", ") + std::string(f.name);
  return names;
}

// MOEConfig(num_experts, top_k, hidden_dim, expert_dim, capacity_factor, **fields), as the
// reference API's constructor plus any field by name. A glu config without an
// activation gets glu's default (silu), as on the command line.
MOEConfig make_config(const py::args& args, const py::kwargs& kwargs) {
  static const char* positional[] = {"num_experts", "top_k", "hidden_dim", "expert_dim", "capacity_factor"};
  MOE_CHECK_ARG(args.size() <= 5, "MOEConfig", args.size(),
                " positional arguments; expected at most 5 (num_experts, top_k, hidden_dim, expert_dim, "
                "capacity_factor), the others by name");
  MOEConfig c;
  bool activation_given = false;
  for (std::size_t i = 0; i < args.size(); ++i) set_field(config_field(positional[i]), c, args[i]);
  for (const auto& item : kwargs) {
    const std::string name = item.first.cast<std::string>();
    bool known = false;
    for (const ConfigField& f : config_fields()) known = known || name == f.name;
    MOE_CHECK_ARG(known, "MOEConfig", "unknown field '", name, "'; expected one of ", field_names());
    for (std::size_t i = 0; i < args.size(); ++i)
      MOE_CHECK_ARG(name != positional[i], "MOEConfig", name, " given both by position and by name");
    set_field(config_field(name), c, item.second);
    activation_given = activation_given || name == "activation";
  }
  if (!activation_given) c.activation = default_activation(c.expert_kind);
  return c;
}

}  // namespace

void bind_config(py::module_& m) {
  py::class_<MOEConfig> cls(m, "MOEConfig",
                            "The shape and routing options of one MoE layer (docs/design.md §1, §1b). "
                            "MOEConfig(num_experts, top_k, hidden_dim, expert_dim, capacity_factor, **fields); "
                            "every field is also a property. Not validated until used (or validate()).");
  cls.def(py::init(&make_config));
  for (const ConfigField& field : config_fields()) {
    const ConfigField* f = &field;
    cls.def_property(
        f->name, [f](const MOEConfig& c) { return get_field(*f, c); },
        [f](MOEConfig& c, const py::handle& v) { set_field(*f, c, v); }, f->help);
  }
  cls.def("validate", &MOEConfig::validate, "Raises moe.Error naming the first invalid field.")
      .def("expert_param_count", &MOEConfig::expert_param_count, "Elements of one expert's flat parameters.")
      .def("shared_expert_param_count", &MOEConfig::shared_expert_param_count)
      .def("to_dict",
           [](const MOEConfig& c) {
             py::dict d;
             for (const ConfigField& f : config_fields()) d[f.name] = get_field(f, c);
             return d;
           })
      .def_static("field_names", [] {
        std::vector<std::string> names;
        for (const ConfigField& f : config_fields()) names.emplace_back(f.name);
        return names;
      })
      .def("__eq__",
           [](const MOEConfig& a, const MOEConfig& b) {
             for (const ConfigField& f : config_fields())
               if (field_code(f, a) != field_code(f, b)) return false;
             return true;
           })
      .def("__repr__", [](const MOEConfig& c) { return "MOEConfig(" + c.to_string() + ")"; });
  m.def("validate_config", &validate_config, py::arg("config"),
        "The reference API's check: prints the problem to stderr and returns False if invalid.");
}

}  // namespace moe::python
