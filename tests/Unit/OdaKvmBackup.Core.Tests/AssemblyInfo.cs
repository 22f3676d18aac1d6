// The core runs on the KVM host only (Linux), and so do its tests (they use real files, loop devices, umask).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
