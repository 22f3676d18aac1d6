using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Safety;

/// <summary>The native tools a run works with.</summary>
public sealed record HostTools(VirshClient Virsh, QemuImgClient QemuImg);
