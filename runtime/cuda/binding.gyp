{
  # Built by scripts/build-addon.mjs (npm run build:addon). No CUDA headers or
  # libraries are needed: the driver and NVRTC are dlopen'ed at run time.
  "targets": [
    {
      "target_name": "tilec_cuda",
      "sources": [
        "native/tilec_cuda.cc",
        "native/kernel.cc",
        "native/nvrtc.cc",
        "native/half.cc",
        "native/loader.cc",
        "native/cublas.cc",
        "native/nccl.cc",
        "native/tensormap.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-ldl"]
    }
  ]
}
