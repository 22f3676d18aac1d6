namespace OdaKvmBackup.Core.RunState;

public enum BackupConsistency
{
    /// <summary>File systems frozen by qemu-guest-agent at the snapshot instant.</summary>
    Quiesced,
    /// <summary>Taken without a freeze, as if the power had been cut: asked for with -CrashConsistent.</summary>
    CrashConsistent,
    /// <summary>The domain was shut off: its disks were copied as they are, without a snapshot.</summary>
    Cold,
}
