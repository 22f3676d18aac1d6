using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Stores;

/// <summary>
/// The small files of a set (backup.json, domain.xml) come from a store that may be less protected than the host:
/// they are read only when they are regular files (never a FIFO, which would hang the read, a device, a socket, a
/// folder or a symbolic link out of the store) no larger than their cap. A refusal is BackupSetUnreadable: the
/// catalog reports that set and goes on with the others.
/// </summary>
internal static class SmallFiles
{
    /// <summary>backup.json: 64 MiB. It holds a SHA-256 per 16 MiB segment of data of each copy on an SSH server,
    /// about 85 bytes each: 64 MiB is room for some 12 TiB of data, where 1 MiB would refuse a set with more than
    /// 190 GiB of data.</summary>
    public const long ManifestLimit = 64L << 20;

    /// <summary>domain.xml: 4 MiB. A libvirt definition takes a few KiB (tens with many devices).</summary>
    public const long DomainXmlLimit = 4L << 20;

    /// <summary>Any other small file: 1 MiB.</summary>
    public const long OtherLimit = 1L << 20;

    /// <summary>The cap of a small file, by its name.</summary>
    public static long LimitFor(string relativePath) => relativePath[(relativePath.LastIndexOf('/') + 1)..] switch
    {
        Paths.BackupNames.ManifestFileName => ManifestLimit,
        Paths.BackupNames.DomainXmlFileName => DomainXmlLimit,
        _ => OtherLimit,
    };

    /// <summary>What a file whose st_mode is <paramref name="mode"/> is, in words, when it is not a regular file;
    /// null for a regular file.</summary>
    internal static string? NonRegularKind(uint? mode) => (mode & 0xF000) switch
    {
        0x8000 => null,
        0x1000 => "a FIFO (named pipe)",
        0x2000 => "a character device",
        0x4000 => "a folder",
        0x6000 => "a block device",
        0xA000 => "a symbolic link",
        0xC000 => "a socket",
        null => "of a type the server did not say",
        var other => $"of file type 0x{other:X}",
    };

    /// <summary>Throws BackupSetUnreadable unless <paramref name="mode"/> is a regular file's and <paramref name="size"/>
    /// within <paramref name="limit"/>.</summary>
    internal static void Require(string where, uint? mode, long size, long limit)
    {
        if (NonRegularKind(mode) is { } kind)
            throw Refused(where, $"is {kind}, not a regular file");
        if (size > limit)
            throw TooLarge(where, size, limit);
    }

    /// <summary>A file past its cap; <paramref name="size"/> is what it holds, or (read past the cap) at least holds.</summary>
    internal static BackupException TooLarge(string where, long size, long limit) =>
        Refused(where, $"holds {(size > limit + 1 ? Paths.FileSystemPaths.FormatBytes(size) + ", " : "")}more than the {limit >> 20} MiB a {where[(where.LastIndexOf('/') + 1)..]} may hold");

    /// <summary>A set whose small file is not what the module writes: nothing of it was read.</summary>
    internal static BackupException Refused(string where, string what) =>
        new(ErrorIds.BackupSetUnreadable, BackupErrorCategory.SecurityError,
            $"'{where}' {what}: the module writes only regular files of bounded size there, so this set cannot be trusted and nothing of it was read.",
            "Look at the set's folder on its storage (who made that file, and why?); back up again, and remove the folder by hand once inspected.", where);

    /// <summary>A copy (or other file) of a set that is not what the module writes there: it was not read.</summary>
    internal static BackupException NotAStoredCopy(string where, string what, string untouched = "it was not read") =>
        new(ErrorIds.BackupCopyUnsafe, BackupErrorCategory.SecurityError,
            $"'{where}' {what}: OdaKvmBackup writes every copy as a regular file in its set's own folder, so {untouched}.",
            "Look at the set's folder on its storage (who put that there, and why?); use another set, and remove this one by hand once inspected.", where);

    internal static BackupException Unreadable(string where, string why, Exception? inner = null) =>
        new(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData, $"'{where}' cannot be read: {why}.",
            "Check the storage and the file's permissions; the set cannot be used until it can be read.", where, inner);

    internal static BackupException NotFound(string where) =>
        new(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound, $"'{where}' does not exist.", null, where);

    // ------------------------------------------------------------------ local files

    /// <summary>
    /// Reads a small file of a local store: looked at without following a link (lstat), refused unless it is a
    /// regular file within <paramref name="limit"/>, then opened without following a link and without blocking
    /// (O_NOFOLLOW | O_NONBLOCK: a FIFO swapped in meanwhile cannot hang the open), the open file checked again,
    /// and never read past the cap.
    /// </summary>
    internal static byte[] ReadLocal(string path, long limit)
    {
        try
        {
            using var handle = OpenLocal(path, status => Require(path, status.Mode, status.Size, limit), out var opened);
            var content = new byte[Math.Min(opened.Size, limit) + 1];
            var length = 0;
            int read;
            while (length < content.Length && (read = RandomAccess.Read(handle, content.AsSpan(length), length)) > 0)
                length += read;
            if (length > limit)
                throw TooLarge(path, length, limit); // it grew since it was looked at
            return content[..length];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw Unreadable(path, ex.Message.TrimEnd('.'), ex);
        }
    }

    /// <summary>
    /// Opens a file of a local store for reading only as what <paramref name="require"/> accepts (it throws
    /// otherwise), looked at twice: by its name without following a link (lstat), then as opened (fstat). The open
    /// follows no link and does not block (O_NOFOLLOW | O_NONBLOCK), so a FIFO swapped in meanwhile cannot hang it.
    /// </summary>
    internal static SafeFileHandle OpenLocal(string path, Action<NativeFiles.Status> require, out NativeFiles.Status opened)
    {
        require(NativeFiles.LStat(path) ?? throw NotFound(path));
        var handle = NativeFiles.OpenNoFollow(path);
        try
        {
            opened = NativeFiles.FStat(handle);
            require(opened);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }
}
