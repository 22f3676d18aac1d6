namespace OdaKvmBackup.Core.Backup;

/// <summary>Where a disk's overlay goes.</summary>
public static class OverlayNaming
{
    public const string DefaultSnapshotName = "FILE_STAGE_BACKUP.TEMP";

    /// <summary>
    /// Beside the disk, named as libvirt would (source minus its last extension, '.', snapshot name:
    /// /x/linux_boot -> /x/linux_boot.FILE_STAGE_BACKUP.TEMP, /x/a.qcow2 -> /x/a.FILE_STAGE_BACKUP.TEMP); in an
    /// overlay folder, prefixed with the domain name, since disks of several domains share one folder there.
    /// </summary>
    public static string OverlayPath(string domain, string source, string snapshotName, string? overlayDirectory)
    {
        var stem = Path.GetFileNameWithoutExtension(source);
        return overlayDirectory is null
            ? Path.Combine(Path.GetDirectoryName(source) ?? "/", stem + "." + snapshotName)
            : Path.Combine(overlayDirectory, domain + "." + stem + "." + snapshotName);
    }

    /// <summary>True for an image this module would have made as an overlay with that snapshot name.</summary>
    public static bool LooksLikeOurOverlay(string path, string snapshotName) =>
        Path.GetFileName(path).EndsWith("." + snapshotName, StringComparison.Ordinal);
}
