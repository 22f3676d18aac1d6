namespace OdaKvmBackup.Core.Host;

/// <summary>The native tools a run works with.</summary>
internal sealed record HostTools(VirshClient Virsh, QemuImgClient QemuImg);
