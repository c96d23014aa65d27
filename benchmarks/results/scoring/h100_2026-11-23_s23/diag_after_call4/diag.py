import ctypes, os, sys
def loaded(): return [l.split()[-1] for l in open('/proc/self/maps') if 'libnvjpeg' in l][:1]
print('start', loaded(), flush=True)
from scoring.gpu_decode import gpu_decode_unavailable
print('nvimgcodec import', gpu_decode_unavailable(), loaded(), flush=True)
from scoring import nvjpeg_hardware, nvjpeg_streams
lib = nvjpeg_hardware.load_library()
print('loaded', loaded(), nvjpeg_streams.state(), flush=True)
import cupy
cupy.cuda.Device(0).use()
d = nvjpeg_hardware.HardwareJpegDecoder()
print('decoder', nvjpeg_streams.state(), d.engines(), flush=True)
from scoring.import_slots import loaded_library, import_slots
base, path = loaded_library(lib._handle)
slots = import_slots(path, 'dlsym')
print('slot holds', [hex(ctypes.c_void_p.from_address(base + s).value) for s in slots],
      'hook', hex(nvjpeg_streams._hooks.address(nvjpeg_streams._hooks.dlsym)) if nvjpeg_streams._hooks else None)
