namespace OdaKvmBackup.Core.Backup;

/// <summary>Path checks shared by the preflight and the cmdlets.</summary>
public static class FileSystemPaths
{
    /// <summary>Full path without a trailing separator, so that folders compare equal however they were typed.</summary>
    public static string Normalize(string path)
    {
        var full = Path.GetFullPath(path);
        return full.Length > 1 ? full.TrimEnd(Path.DirectorySeparatorChar) : full;
    }

    public static bool IsSameOrInside(string path, string folder)
    {
        var p = Normalize(path);
        var f = Normalize(folder);
        return p == f || p.StartsWith(f + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    public static long FreeBytes(string folder) => new DriveInfo(folder).AvailableFreeSpace;

    /// <summary>Throws a clear error when a folder the user named does not exist or cannot be written.</summary>
    public static string RequireWritableFolder(string path, string parameterName)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.InvalidArgument,
                $"-{parameterName} is empty.", $"Name an existing folder with -{parameterName}.", path);
        }
        var full = Normalize(path);
        if (!Directory.Exists(full))
        {
            throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                $"The folder '{full}' given as -{parameterName} does not exist.",
                $"Create it first (mkdir -p '{full}') or name another folder.", full);
        }
        // A new random name, created with O_EXCL: a symlink planted in the folder is never followed or overwritten.
        var probe = Path.Combine(full, BackupNames.ProbeFileName());
        try
        {
            Safety.PrivateFiles.CreateNew(probe).Dispose();
            File.Delete(probe);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new BackupException(ErrorIds.PathNotWritable, BackupErrorCategory.PermissionDenied,
                $"The folder '{full}' given as -{parameterName} cannot be written: {ex.Message}",
                "Run as root, or fix the folder's permissions or mount (read-only file system?).", full, ex);
        }
        return full;
    }

    public static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.0} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        _ => $"{bytes / 1024.0:0.0} KiB",
    };
}
