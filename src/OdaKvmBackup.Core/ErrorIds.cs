namespace OdaKvmBackup.Core;

/// <summary>Stable error ids: Pester and users' scripts match on them.</summary>
public static class ErrorIds
{
    public const string ToolNotFound = "ToolNotFound";
    public const string DomainNotFound = "DomainNotFound";
    public const string DiskNotFound = "DiskNotFound";
    public const string InvalidDomainName = "InvalidDomainName";
    public const string LibvirtUnreachable = "LibvirtUnreachable";
    public const string LibvirtPermissionDenied = "LibvirtPermissionDenied";
    public const string VirshFailed = "VirshFailed";
    public const string QemuImgFailed = "QemuImgFailed";
    public const string UnparsableOutput = "UnparsableOutput";
    public const string AgentNotConfigured = "GuestAgentNotConfigured";
    public const string AgentNotConnected = "GuestAgentNotConnected";
    public const string FreezeDeniedBySelinux = "GuestFreezeDeniedBySelinux";
    public const string FreezeFailed = "GuestFreezeFailed";
    public const string VssVolumeFailed = "GuestVssVolumeFailed";
    public const string VssWriterFailed = "GuestVssWriterFailed";
    public const string VssFreezeTimedOut = "GuestVssFreezeTimedOut";
    public const string VssProviderFailed = "GuestVssProviderFailed";
    public const string DiskAlreadyOnOverlay = "DiskAlreadyOnOverlay";
    public const string DiskHasForeignBackingChain = "DiskHasForeignBackingChain";
    public const string LeftoverOverlayFile = "LeftoverOverlayFile";
    public const string LeftoverSnapshotMetadata = "LeftoverSnapshotMetadata";
    public const string ActiveBlockJob = "ActiveBlockJob";
    public const string UnfinishedBackup = "UnfinishedBackup";
    public const string BackupInProgress = "BackupInProgress";
    public const string OverlayCollision = "OverlayCollision";
    public const string NotEnoughSpaceForOverlays = "NotEnoughSpaceForOverlays";
    public const string NotEnoughSpaceAtDestination = "NotEnoughSpaceAtDestination";
    public const string UnsupportedDisk = "UnsupportedDisk";
    public const string DiskChanged = "DiskChangedSinceListed";
    public const string SnapshotFailed = "SnapshotFailed";
    public const string PathNotFound = "PathNotFound";
    public const string PathNotWritable = "PathNotWritable";
    public const string DestinationInsideDiskFolder = "DestinationInsideDiskFolder";
    /// <summary>A folder under a destination (or retention path) that the run would write into is not the writer's
    /// own, is writable by group or others, or is a symbolic link: refused before the snapshot.</summary>
    public const string UnsafeDestinationFolder = "UnsafeDestinationFolder";
    public const string RetentionIsDiskFolder = "RetentionIsDiskFolder";
    public const string BackupSetExists = "BackupSetExists";
    public const string DestinationFull = "DestinationFull";
    public const string CopyFailed = "CopyFailed";
    public const string CopyVerificationFailed = "CopyVerificationFailed";
    public const string DomainStartedDuringColdCopy = "DomainStartedDuringColdCopy";
    public const string CommitFailed = "CommitFailed";
    public const string PivotNotReady = "PivotNotReady";
    public const string OverlayInUse = "OverlayInUse";
    public const string RetainedOverlayExists = "RetainedOverlayExists";
    public const string RepairFailed = "RepairFailed";
    public const string StillOnOverlays = "StillOnOverlays";
    /// <summary>The domain is back on its own disks but something of the run is left for Repair-KvmBackup.</summary>
    public const string RepairNeeded = "RepairNeeded";
    public const string InvalidSnapshotName = "InvalidSnapshotName";
    public const string JournalUnreadable = "JournalUnreadable";
    /// <summary>The journal (or a domain's lock) cannot be written under the state folder: full, read-only, or not a folder.</summary>
    public const string JournalWriteFailed = "JournalWriteFailed";
    public const string BackupSetUnreadable = "BackupSetUnreadable";
    public const string StorageFailed = "StorageFailed";
    public const string RunAbandoned = "RunAbandoned";
    public const string RunHasAnotherDestination = "RunHasAnotherDestination";
    public const string AlreadyCopied = "AlreadyCopied";
    public const string DiskNoLongerFrozen = "DiskNoLongerFrozen";
    public const string DiskBeingCopied = "DiskBeingCopied";
    public const string RunClosed = "RunClosed";
    public const string SharedDiskNotSupported = "SharedDiskNotSupported";
    public const string CommandTimedOut = "CommandTimedOut";
    public const string UnexpectedError = "UnexpectedError";
    public const string NotOnKvmHost = "NotOnKvmHost";
    public const string PathNotReadable = "PathNotReadable";
    public const string InvalidSshDestination = "InvalidSshDestination";
    public const string SshHostKeyUnknown = "SshHostKeyUnknown";
    public const string SshHostKeyChanged = "SshHostKeyChanged";
    public const string SshAuthenticationFailed = "SshAuthenticationFailed";
    public const string SshHostUnreachable = "SshHostUnreachable";
    public const string SshConnectionLost = "SshConnectionLost";
    public const string SshFailed = "SshFailed";
    public const string SshCommandFailed = "SshCommandFailed";
    public const string SftpFailed = "SftpFailed";
    // A way back: listing, testing, booting, restoring and removing backup sets.
    public const string BackupSetNotFound = "BackupSetNotFound";
    public const string BackupSetNotComplete = "BackupSetNotComplete";
    public const string BackupCopyMissing = "BackupCopyMissing";
    public const string BackupCopyDamaged = "BackupCopyDamaged";
    /// <summary>A copy of a set is not a plain image in the format its manifest says (a backing or data file, another
    /// format or size, not a regular file): it is never given to QEMU or qemu-img.</summary>
    public const string BackupCopyUnsafe = "BackupCopyUnsafe";
    public const string BootTestFailed = "BootTestFailed";
    public const string BootTestTimedOut = "BootTestTimedOut";
    public const string BootTestNeedsLocalSet = "BootTestNeedsLocalSet";
    public const string BootTestLeftover = "BootTestLeftover";
    public const string NotEnoughSpaceForBootTest = "NotEnoughSpaceForBootTest";
    public const string DomainXmlNotRestorable = "DomainXmlNotRestorable";
    public const string RestoreWouldUseProductionFile = "RestoreWouldUseProductionFile";
    public const string RestoreTargetExists = "RestoreTargetExists";
    public const string RestoreTargetMismatch = "RestoreTargetMismatch";
    public const string RestoreVerificationFailed = "RestoreVerificationFailed";
    public const string DomainExists = "DomainExists";
    public const string DomainNotShutOff = "DomainNotShutOff";
    public const string InPlaceNeedsForce = "InPlaceRestoreNeedsForce";
    public const string NoRetentionPolicy = "NoRetentionPolicy";
    public const string InvalidConsolePattern = "InvalidConsolePattern";
    public const string NewestCompleteSetKept = "NewestCompleteSetKept";
    /// <summary>A set is dated in the future, or its manifest's time disagrees with its run id: pruning of its VM stops.</summary>
    public const string BackupSetOutOfOrder = "BackupSetOutOfOrder";
}
