namespace OdaKvmBackup.Core.Paths;

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

    // ---------------------------------------------------------------- names that came from a store

    /// <summary>
    /// The one place where a folder is joined with a name that came from a store (a manifest's File, a folder name a
    /// server listed) or was built from one: the result is proven to lie inside <paramref name="folder"/> before it is
    /// used, as PhysicalFileProvider does. A name that is empty, absolute, holds a NUL, or has a '.' or '..' part is
    /// refused, whatever the file system holds: "a/../b" is refused too, since the kernel resolves ".." after a link.
    /// Works alike for host paths and for store paths ('/'-separated, relative to the store's root; "" is the root).
    /// </summary>
    /// <param name="folder">A folder of the host, or of a store ("" for its root).</param>
    /// <param name="name">The name to join: a file name, or a path below the folder ("vm/run/disk").</param>
    /// <param name="whose">Who gave the name, to start the message: "The set /backup/vm/20261128-101500".</param>
    /// <exception cref="BackupException">BackupSetUnreadable, naming <paramref name="whose"/> and the name.</exception>
    public static string JoinInside(string folder, string name, string whose)
    {
        if (WhyNotInside(name) is { } why)
        {
            throw new BackupException(ErrorIds.BackupSetUnreadable, BackupErrorCategory.SecurityError,
                $"{whose} names {Quote(name)}, which would lead outside '{folder}': {why}. Nothing was read or written there.",
                "The set cannot be trusted: whoever can write to the backup store changed it. Keep its folder aside to inspect it, and back the VM up again.", folder);
        }
        return folder.Length == 0 ? name : folder.EndsWith('/') ? folder + name : folder + "/" + name;
    }

    /// <summary>Joins a folder and a name already known to stay inside it: a part of a path
    /// <see cref="JoinInside"/> checked, or a name the file system itself gave. For host paths and store paths alike
    /// ("" or "." is a store's root). Every other join of a folder and a name goes through BackupNames,
    /// StateDirectory or <see cref="JoinInside"/>.</summary>
    public static string JoinChecked(string folder, string name) =>
        folder.Length == 0 || folder == "." ? name : folder.EndsWith('/') ? folder + name : folder + "/" + name;

    /// <summary>Why a name joined to a folder would not name something inside it; null when it would.</summary>
    internal static string? WhyNotInside(string? name)
    {
        if (string.IsNullOrEmpty(name))
            return "it is empty";
        if (name.Contains('\0', StringComparison.Ordinal))
            return "it holds a NUL character";
        if (name.StartsWith('/'))
            return "it is an absolute path";
        if (name.Split('/').Any(part => part is "." or ".."))
            return "it has a '.' or '..' part";
        return null;
    }

    /// <summary>True for one plain name in a folder: not empty, no '/', no NUL, not "." or "..".</summary>
    public static bool IsPlainName(string? name) => WhyNotInside(name) is null && !name!.Contains('/', StringComparison.Ordinal);

    /// <summary>A name read from a store, in quotes, with control characters shown as \xNN (a name may carry line
    /// breaks or escape sequences meant for a terminal); "null" when there is none.</summary>
    public static string Quote(string? name) =>
        name is null ? "null" : "'" + string.Concat(name.Select(c => char.IsControl(c) ? $"\\x{(int)c:x2}" : c.ToString())) + "'";

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
            Paths.PrivateFiles.CreateNew(probe).Dispose();
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
