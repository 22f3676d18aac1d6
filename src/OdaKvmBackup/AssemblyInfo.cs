// The module runs on the KVM host (Linux): from a Windows jump host it is used through PowerShell remoting.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
