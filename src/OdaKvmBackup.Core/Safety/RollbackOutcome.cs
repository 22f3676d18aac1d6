using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Core.Safety;

/// <summary>How putting a domain back went.</summary>
public sealed record RollbackOutcome(string DomainName, bool BackOnOwnDisks, bool Clean, string Message);
