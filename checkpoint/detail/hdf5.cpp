#include "checkpoint/detail/hdf5.hpp"

#include "checkpoint/detail/fletcher32.hpp"
#include "checkpoint/detail/hdf5_probe.hpp"

#include <cstdio>
#include <functional>
#include <cstdlib>

#include "check.hpp"
#include "collective_check.hpp"
#include "moe/error.hpp"

#if MOE_HAVE_MPI
#include <mpi.h>
#endif

namespace moe::hdf5 {
namespace {

// HDF5's error stack, innermost call last, as one line.
herr_t collect_error(unsigned n, const H5E_error2_t* error, void* out) {
  auto& text = *static_cast<std::string*>(out);
  if (n) text += "; ";
  text += error->func_name ? error->func_name : "?";
  text += ": ";
  text += error->desc ? error->desc : "";
  return 0;
}

struct Hdf5 {
  static constexpr const char* library = "HDF5";
  template <class Code>
  static bool ok(Code code) {
    return code >= 0;
  }
  template <class Code>
  static std::string name(Code) {
    std::string stack;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &stack);
    return stack.empty() ? std::string("(no HDF5 error stack)") : "(" + stack + ")";
  }
};

// HDF5 prints its error stack to stderr by default; moe puts it in moe::Error instead.
void quiet() {
  static const bool done = [] {
    // No HDF5 exit handler: moe closes every file it opens, and on an error path (a
    // full disk) a file whose close failed is abandoned with its temporary name. HDF5's
    // handler would try to close it again at exit and crash (seen: a segfault after
    // "No space left on device").
    H5dont_atexit();
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    register_fast_fletcher32();
    return true;
  }();
  (void)done;
}

herr_t close_id(hid_t id) {
  switch (H5Iget_type(id)) {
    case H5I_FILE: return H5Fclose(id);
    case H5I_GROUP: return H5Gclose(id);
    case H5I_DATASET: return H5Dclose(id);
    case H5I_DATASPACE: return H5Sclose(id);
    case H5I_DATATYPE: return H5Tclose(id);
    case H5I_ATTR: return H5Aclose(id);
    case H5I_GENPROP_LST: return H5Pclose(id);
    default: return -1;
  }
}

Handle checked(hid_t id, const char* call) {
  if (id < 0) detail::fail_call("HDF5", call, Hdf5::name(id), __FILE__, __LINE__);
  return Handle(id);
}

Handle file_access(const Communicator* comm) {
  Handle fapl = checked(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate(H5P_FILE_ACCESS)");
#if MOE_HAVE_MPI
  if (comm && comm->native_handle()) {
    const MPI_Comm mpi_comm = *static_cast<const MPI_Comm*>(comm->native_handle());
    MOE_CHECK(Hdf5, H5Pset_fapl_mpio(fapl.get(), mpi_comm, MPI_INFO_NULL));
    // Metadata written once, collectively, instead of by every rank.
    MOE_CHECK(Hdf5, H5Pset_coll_metadata_write(fapl.get(), true));
  }
#else
  (void)comm;
#endif
  return fapl;
}

bool uses_mpio(hid_t object) {
  Handle file = checked(H5Iget_file_id(object), "H5Iget_file_id");
  Handle fapl = checked(H5Fget_access_plist(file.get()), "H5Fget_access_plist");
  return H5Pget_driver(fapl.get()) == H5FD_MPIO;
}

Handle transfer(hid_t dataset, bool collective) {
  Handle dxpl = checked(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate(H5P_DATASET_XFER)");
  if (uses_mpio(dataset))
    MOE_CHECK(Hdf5, H5Pset_dxpl_mpio(dxpl.get(), collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT));
  return dxpl;
}

Handle utf8_string_type() {
  Handle type = checked(H5Tcopy(H5T_C_S1), "H5Tcopy(H5T_C_S1)");
  MOE_CHECK(Hdf5, H5Tset_size(type.get(), H5T_VARIABLE));
  MOE_CHECK(Hdf5, H5Tset_cset(type.get(), H5T_CSET_UTF8));
  return type;
}

Handle scalar_attribute(hid_t location, const std::string& name, hid_t type) {
  Handle space = checked(H5Screate(H5S_SCALAR), "H5Screate(H5S_SCALAR)");
  return checked(H5Acreate2(location, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2");
}

}  // namespace

Handle::~Handle() {
  if (id_ >= 0 && close_id(id_) < 0) std::fprintf(stderr, "moe: closing an HDF5 id failed in ~Handle\n");
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) close_id(id_);
    id_ = other.id_;
    other.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Handle::close() {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  MOE_CHECK(Hdf5, close_id(id));
}

bool is_hdf5_file(const std::string& path) {
  quiet();
  probe_untrusted_file(path);
  return H5Fis_hdf5(path.c_str()) > 0;
}

Handle create_file(const std::string& path, const Communicator* comm, bool exclusive) {
  quiet();
  Handle fapl = file_access(comm);
  return checked(H5Fcreate(path.c_str(), exclusive ? H5F_ACC_EXCL : H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()),
                 "H5Fcreate");
}

Handle open_file(const std::string& path, bool writable, const Communicator* comm) {
  quiet();
  // A collective open is not probed: every rank would fork, and ranks whose probes
  // disagreed would leave the others waiting in H5Fopen. moe opens a file collectively
  // only after rank 0 has opened it alone (probed) and shared the verdict.
  if (!writable && !comm) probe_untrusted_file(path);
  Handle fapl = file_access(comm);
  try {
    return checked(H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get()), "H5Fopen");
  } catch (const Error& e) {
    detail::fail("hdf5", "'", path, "' cannot be opened as an HDF5 file: it is truncated or damaged (", e.what(), ")");
  }
}

bool link_exists(hid_t location, const std::string& path) {
  // Walk the path one component at a time: H5Lexists fails, rather than answering
  // false, when an intermediate group is missing.
  std::size_t at = path[0] == '/' ? 1 : 0;
  while (at <= path.size()) {
    const std::size_t slash = path.find('/', at);
    const std::string prefix = path.substr(0, slash == std::string::npos ? path.size() : slash);
    const htri_t exists = H5Lexists(location, prefix.c_str(), H5P_DEFAULT);
    MOE_CHECK(Hdf5, exists);
    if (!exists) return false;
    if (slash == std::string::npos) return true;
    at = slash + 1;
  }
  return true;
}

Handle create_group(hid_t location, const std::string& name) {
  Handle lcpl = checked(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(H5P_LINK_CREATE)");
  MOE_CHECK(Hdf5, H5Pset_create_intermediate_group(lcpl.get(), 1));
  return checked(H5Gcreate2(location, name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate2");
}

Handle open_group(hid_t location, const std::string& name) {
  return checked(H5Gopen2(location, name.c_str(), H5P_DEFAULT), "H5Gopen2");
}

Handle open_dataset(hid_t location, const std::string& path) {
  // Name the file and the object in what goes wrong: a missing name, a link to
  // nothing, a group (or another object) where a dataset belongs.
  std::string file(512, '\0');
  const ssize_t length = H5Fget_name(location, file.data(), file.size());
  file.resize(length > 0 ? std::min<std::size_t>(static_cast<std::size_t>(length), 511) : 0);
  MOE_CHECK_ARG(link_exists(location, path), "hdf5", "'", file, "' has no object ", path);
  const htri_t target = H5Oexists_by_name(location, path.c_str(), H5P_DEFAULT);
  MOE_CHECK_ARG(target > 0, "hdf5", "'", file, "': ", path, " is a link to nothing (dangling); expected a dataset");
  H5O_info_t info;
  MOE_CHECK(Hdf5, H5Oget_info_by_name2(location, path.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT));
  MOE_CHECK_ARG(info.type == H5O_TYPE_DATASET, "hdf5", "'", file, "': ", path, " is ",
                info.type == H5O_TYPE_GROUP ? "a group" : "not a dataset", "; expected a dataset");
  try {
    return checked(H5Dopen2(location, path.c_str(), H5P_DEFAULT), "H5Dopen2");
  } catch (const Error& e) {
    detail::fail("hdf5", "'", file, "': dataset ", path, " cannot be opened: ", e.what());
  }
}

Handle create_dataset(hid_t location, const std::string& path, hid_t type, const Dims& dims,
                      const DatasetOptions& options) {
  Handle space = dataspace(dims);
  Handle lcpl = checked(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate(H5P_LINK_CREATE)");
  MOE_CHECK(Hdf5, H5Pset_create_intermediate_group(lcpl.get(), 1));
  Handle dcpl = checked(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate(H5P_DATASET_CREATE)");
  if (!options.chunk.empty()) {
    MOE_CHECK(Hdf5, H5Pset_chunk(dcpl.get(), static_cast<int>(options.chunk.size()), options.chunk.data()));
    if (options.fletcher32) MOE_CHECK(Hdf5, H5Pset_fletcher32(dcpl.get()));
  }
  // Every element is written; filling first would only double the I/O.
  MOE_CHECK(Hdf5, H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
  return checked(H5Dcreate2(location, path.c_str(), type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
                 "H5Dcreate2");
}

Dims dataset_dims(hid_t dataset) {
  Handle space = checked(H5Dget_space(dataset), "H5Dget_space");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  MOE_CHECK(Hdf5, rank);
  Dims dims(static_cast<std::size_t>(rank));
  MOE_CHECK(Hdf5, H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return dims;
}

bool has_fletcher32(hid_t dataset) {
  Handle dcpl = checked(H5Dget_create_plist(dataset), "H5Dget_create_plist");
  const int filters = H5Pget_nfilters(dcpl.get());
  MOE_CHECK(Hdf5, filters);
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0;
    std::size_t n = 0;
    const H5Z_filter_t id = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n, nullptr, 0, nullptr, nullptr);
    MOE_CHECK(Hdf5, id);
    if (id == H5Z_FILTER_FLETCHER32) return true;
  }
  return false;
}

bool is_float32(hid_t dataset) {
  Handle type = checked(H5Dget_type(dataset), "H5Dget_type");
  return H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_size(type.get()) == 4;
}

bool is_floating(hid_t dataset) {
  Handle type = checked(H5Dget_type(dataset), "H5Dget_type");
  return H5Tget_class(type.get()) == H5T_FLOAT;
}

bool is_integer(hid_t dataset) {
  Handle type = checked(H5Dget_type(dataset), "H5Dget_type");
  return H5Tget_class(type.get()) == H5T_INTEGER;
}

bool attribute_exists(hid_t location, const std::string& name) {
  const htri_t exists = H5Aexists(location, name.c_str());
  MOE_CHECK(Hdf5, exists);
  return exists > 0;
}

std::vector<std::string> attribute_names(hid_t location) {
  H5O_info_t info;
  MOE_CHECK(Hdf5, H5Oget_info2(location, &info, H5O_INFO_NUM_ATTRS));
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    const ssize_t length = H5Aget_name_by_idx(location, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    MOE_CHECK(Hdf5, length);
    std::string name(static_cast<std::size_t>(length), '\0');
    MOE_CHECK(Hdf5, H5Aget_name_by_idx(location, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                                       static_cast<std::size_t>(length) + 1, H5P_DEFAULT));
    names.push_back(std::move(name));
  }
  return names;
}

void write_attribute(hid_t location, const std::string& name, std::int64_t value) {
  Handle attr = scalar_attribute(location, name, H5T_STD_I64LE);
  MOE_CHECK(Hdf5, H5Awrite(attr.get(), H5T_NATIVE_INT64, &value));
}

void write_attribute(hid_t location, const std::string& name, double value) {
  Handle attr = scalar_attribute(location, name, H5T_IEEE_F64LE);
  MOE_CHECK(Hdf5, H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, &value));
}

void write_attribute(hid_t location, const std::string& name, const std::string& value) {
  Handle type = utf8_string_type();
  Handle attr = scalar_attribute(location, name, type.get());
  const char* text = value.c_str();
  MOE_CHECK(Hdf5, H5Awrite(attr.get(), type.get(), &text));
}

namespace {

// "'file.h5': attribute 'name' of /group", for messages.
std::string describe_attribute(hid_t location, const std::string& name) {
  std::string file(256, '\0'), object(256, '\0');
  const ssize_t file_length = H5Fget_name(location, file.data(), file.size());
  const ssize_t object_length = H5Iget_name(location, object.data(), object.size());
  file.resize(file_length > 0 ? std::min<std::size_t>(static_cast<std::size_t>(file_length), 255) : 0);
  object.resize(object_length > 0 ? std::min<std::size_t>(static_cast<std::size_t>(object_length), 255) : 0);
  return "'" + file + "': attribute '" + name + "' of " + (object.empty() ? "/" : object);
}

// Opens an attribute after checking, before anything is read, that it holds exactly one
// value of the expected type class: a file must not be able to make a scalar read copy
// an array (a stack overwrite) or convert a string into a number.
Handle open_scalar_attribute(hid_t location, const std::string& name, std::initializer_list<H5T_class_t> classes,
                             const char* expected) {
  Handle attr = checked(H5Aopen(location, name.c_str(), H5P_DEFAULT), "H5Aopen");
  Handle space = checked(H5Aget_space(attr.get()), "H5Aget_space");
  const hssize_t points = H5Sget_simple_extent_npoints(space.get());
  MOE_CHECK(Hdf5, points);
  MOE_CHECK_ARG(points == 1, "checkpoint", describe_attribute(location, name), " holds ", points,
                " values; expected a single ", expected);
  Handle type = checked(H5Aget_type(attr.get()), "H5Aget_type");
  const H5T_class_t found = H5Tget_class(type.get());
  bool ok = false;
  for (H5T_class_t c : classes) ok = ok || c == found;
  MOE_CHECK_ARG(ok, "checkpoint", describe_attribute(location, name), " is ",
                found == H5T_STRING    ? "a string"
                : found == H5T_INTEGER ? "an integer"
                : found == H5T_FLOAT   ? "a floating-point number"
                                       : "of another HDF5 type",
                "; expected ", expected);
  return attr;
}

}  // namespace

std::int64_t read_int64_attribute(hid_t location, const std::string& name) {
  Handle attr = open_scalar_attribute(location, name, {H5T_INTEGER}, "integer");
  std::int64_t value = 0;
  MOE_CHECK(Hdf5, H5Aread(attr.get(), H5T_NATIVE_INT64, &value));
  return value;
}

double read_float64_attribute(hid_t location, const std::string& name) {
  Handle attr = open_scalar_attribute(location, name, {H5T_FLOAT, H5T_INTEGER}, "number");
  double value = 0;
  MOE_CHECK(Hdf5, H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value));
  return value;
}

std::string read_string_attribute(hid_t location, const std::string& name) {
  Handle attr = open_scalar_attribute(location, name, {H5T_STRING}, "string");
  Handle file_type = checked(H5Aget_type(attr.get()), "H5Aget_type");
  const htri_t variable = H5Tis_variable_str(file_type.get());
  MOE_CHECK(Hdf5, variable);
  if (variable) {
    Handle type = utf8_string_type();
    MOE_CHECK(Hdf5, H5Tset_cset(type.get(), H5Tget_cset(file_type.get())));
    char* text = nullptr;
    MOE_CHECK(Hdf5, H5Aread(attr.get(), type.get(), &text));
    std::string value = text ? text : "";
    H5free_memory(text);
    return value;
  }
  const std::size_t size = H5Tget_size(file_type.get());
  std::string value(size, '\0');
  Handle type = checked(H5Tcopy(file_type.get()), "H5Tcopy");
  MOE_CHECK(Hdf5, H5Aread(attr.get(), type.get(), value.data()));
  value.resize(value.find('\0') == std::string::npos ? size : value.find('\0'));
  return value;
}

Handle dataspace(const Dims& dims) {
  return checked(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), "H5Screate_simple");
}

void select_none(hid_t space) { MOE_CHECK(Hdf5, H5Sselect_none(space)); }

void select_boxes(hid_t space, const Dims& start, const Dims& stride, const Dims& count, const Dims& block,
                  bool first) {
  MOE_CHECK(Hdf5, H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, start.data(),
                                      stride.empty() ? nullptr : stride.data(), count.data(),
                                      block.empty() ? nullptr : block.data()));
}

void select_flat_rows(hid_t space, const Dims& dims, hsize_t row_begin, hsize_t row_end) {
  MOE_CHECK_ARG(dims.size() == 2 || dims.size() == 3, "select_flat_rows", "dataset rank ", dims.size(),
                "; expected 2 or 3");
  if (row_begin >= row_end) return select_none(space);
  const hsize_t width = dims.back();
  if (dims.size() == 2) return select_boxes(space, {row_begin, 0}, {}, {row_end - row_begin, width}, {}, true);
  const hsize_t S = dims[1];
  const hsize_t b0 = row_begin / S, s0 = row_begin % S, b1 = row_end / S, s1 = row_end % S;
  if (b0 == b1) return select_boxes(space, {b0, s0, 0}, {}, {1, s1 - s0, width}, {}, true);
  bool first = true;
  hsize_t full_begin = b0;
  if (s0 != 0) {  // the tail of the first, partial batch
    select_boxes(space, {b0, s0, 0}, {}, {1, S - s0, width}, {}, first);
    first = false;
    full_begin = b0 + 1;
  }
  if (b1 > full_begin) {
    select_boxes(space, {full_begin, 0, 0}, {}, {b1 - full_begin, S, width}, {}, first);
    first = false;
  }
  if (s1 != 0) select_boxes(space, {b1, 0, 0}, {}, {1, s1, width}, {}, first);
}

void write(hid_t dataset, hid_t memory_type, hid_t memory_space, hid_t file_space, const void* data,
           bool collective) {
  Handle dxpl = transfer(dataset, collective);
  MOE_CHECK(Hdf5, H5Dwrite(dataset, memory_type, memory_space, file_space, dxpl.get(), data));
}

std::uint64_t end_of_allocation(const std::string& path) {
  Handle file = open_file(path, false, nullptr);
  haddr_t eoa = 0;
  MOE_CHECK(Hdf5, H5Fget_eoa(file.get(), &eoa));
  return static_cast<std::uint64_t>(eoa);
}

void collectively(Communicator& comm, const std::function<void()>& io) {
  std::string error;
  try {
    io();
  } catch (const Error& e) {
    error = e.what();
  }
  collective_check(comm, [&] { MOE_CHECK_ARG(error.empty(), "hdf5", error); });
}

void read(hid_t dataset, hid_t memory_type, hid_t memory_space, hid_t file_space, void* data, bool collective) {
  Handle dxpl = transfer(dataset, collective);
  MOE_CHECK(Hdf5, H5Dread(dataset, memory_type, memory_space, file_space, dxpl.get(), data));
}

void flush(hid_t file) { MOE_CHECK(Hdf5, H5Fflush(file, H5F_SCOPE_GLOBAL)); }

}  // namespace moe::hdf5
