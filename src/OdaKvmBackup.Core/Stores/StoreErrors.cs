using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Stores;

/// <summary>How storage failures read to a user: the cause and what to do.</summary>
internal static class StoreErrors
{
    public static bool IsNoSpace(Exception ex) =>
        (ex.HResult & 0xFFFF) == 28 || ex.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase)
        || ex.Message.Contains("Disk quota exceeded", StringComparison.OrdinalIgnoreCase);

    /// <summary>The error for a failed file operation; <paramref name="path"/> null when it is not known (the
    /// exception's own message then names it, as .NET's usually do).</summary>
    public static BackupException FromIOException(Exception ex, string? path)
    {
        var where = path is null ? "" : $" at '{path}'";
        return ex switch
        {
            _ when IsNoSpace(ex) => new BackupException(ErrorIds.DestinationFull, BackupErrorCategory.WriteError,
                $"No space is left{where}: {ex.Message}", "Free space there or choose another destination, then back up again.", path, ex),
            UnauthorizedAccessException => new BackupException(ErrorIds.PathNotWritable, BackupErrorCategory.PermissionDenied,
                $"{(path is null ? "A file" : $"'{path}'")} cannot be written: {ex.Message}", "Run as root, or fix the permissions or the mount (read-only file system?).", path, ex),
            _ => new BackupException(ErrorIds.StorageFailed, BackupErrorCategory.WriteError,
                $"Reading or writing{(path is null ? " a file" : $" '{path}'")} failed: {ex.Message}", "Check the storage (dmesg, file system errors, NFS mount), then try again.", path, ex),
        };
    }
}
