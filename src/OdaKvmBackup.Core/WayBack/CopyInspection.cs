using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>A copy that passed <see cref="CopyInspection"/>: its path, its format and its virtual size.</summary>
internal sealed record InspectedCopy(string Path, string Format, long VirtualSize);

/// <summary>
/// The one check of a copy from a backup set before QEMU or qemu-img opens it (a boot test's overlay, a restored
/// file before it takes its name, qemu-img check): whoever can write to the store can make a copy that names files of
/// the host. A copy must be a regular file (not a link, a FIFO or a device); `qemu-img info` with the format forced to
/// backup.json's (raw or qcow2, never probed) must read it, and find no backing file, no external data file and the
/// virtual size backup.json records; a copy said to be raw must not start with the header of an image format that
/// can name other files. Anything else is BackupCopyUnsafe, naming the copy and what was found.
/// </summary>
internal static partial class CopyInspection
{
    /// <summary>Headers of image formats that can name a backing file, which a raw copy must not start with.</summary>
    private static readonly (byte[] Magic, string Format)[] ImageHeaders =
    [
        ([0x51, 0x46, 0x49, 0xFB], "qcow2"), // "QFI\xfb"
        ([0x51, 0x45, 0x44, 0x00], "QED"), // "QED\0"
    ];

    /// <param name="qemuImg">Runs `stat` and `qemu-img info`.</param>
    /// <param name="set">The set the copy comes from (for the message and the fix).</param>
    /// <param name="disk">The copy's entry in backup.json: its format and sizes.</param>
    /// <param name="path">The file to inspect: the copy in the set, or a restored file before it takes its name.</param>
    /// <param name="ct">Stops the inspection.</param>
    public static async Task<InspectedCopy> RequireSafeAsync(QemuImgClient qemuImg, BackupSetInfo set, ManifestDisk disk, string path, CancellationToken ct)
    {
        BackupException Unsafe(string finding) => new(ErrorIds.BackupCopyUnsafe, BackupErrorCategory.SecurityError,
            $"The copy of {disk.Target} in the set {VerifyService.Describe(set)} ({path}) is not given to QEMU: {finding}. Nothing was started or defined on it.",
            $"Restore from another set (Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete), and check the backup server: OdaKvmBackup writes every copy as a plain raw or qcow2 image with no backing or data file, so this one was changed after it was written.",
            path);

        if (disk.Format is not ("raw" or "qcow2"))
            throw Unsafe($"backup.json says its format is '{disk.Format}'; only raw and qcow2 copies are used");
        switch (await qemuImg.FileKindAsync(path, ct).ConfigureAwait(false))
        {
            case null:
                throw new BackupException(ErrorIds.BackupCopyMissing, BackupErrorCategory.ObjectNotFound,
                    $"The copy of {disk.Target} in the set {VerifyService.Describe(set)} ({path}) is missing.",
                    $"Restore from another Complete set (Get-KvmBackup -Path {set.Destination} -DomainName {set.DomainName} -Status Complete).", path);
            case UnixFileKind.SymbolicLink:
                throw Unsafe($"it is a symbolic link to {new FileInfo(path).LinkTarget}, not a file of the set");
            case UnixFileKind.RegularFile:
                break;
            case var other:
                throw Unsafe($"it is a {Describe(other!.Value)}, not a regular file");
        }
        ImageInfo info;
        try
        {
            info = await qemuImg.InfoAsync(path, disk.Format, shared: false, ct).ConfigureAwait(false);
        }
        catch (BackupException ex) when (ex.ErrorId == ErrorIds.QemuImgFailed)
        {
            throw Unsafe($"it is not a {disk.Format} image as backup.json says ({ex.Message})");
        }
        if (info.Format != disk.Format)
            throw Unsafe($"qemu-img reads it as {info.Format}, backup.json says {disk.Format}");
        if (info.BackingFile is not null)
            throw Unsafe($"it names a backing file {info.BackingFile}{(info.BackingFormat is null ? "" : $" ({info.BackingFormat})")}, which QEMU would open too");
        if (info.DataFile is not null)
            throw Unsafe($"it names an external data file {info.DataFile}, which QEMU would open too");
        // The manifest records the virtual size since this check exists; before, a raw copy's size was its file's.
        var expected = disk.VirtualSizeBytes ?? (disk.Format == "raw" ? disk.SizeBytes : null);
        if (expected is { } size && info.VirtualSize != size)
            throw Unsafe($"its virtual size is {info.VirtualSize} bytes, backup.json says {size}");
        if (disk.Format == "raw" && ReadHeader(path) is { } header && ImageHeaders.FirstOrDefault(h => header.AsSpan().StartsWith(h.Magic)) is { Format: { } format })
            throw Unsafe($"it starts with a {format} header, though backup.json says raw");
        return new InspectedCopy(path, disk.Format, info.VirtualSize);
    }

    private static string Describe(UnixFileKind kind) => kind switch
    {
        UnixFileKind.Fifo => "FIFO",
        UnixFileKind.CharacterDevice => "character device",
        UnixFileKind.BlockDevice => "block device",
        UnixFileKind.Directory => "folder",
        UnixFileKind.Socket => "socket",
        _ => $"file of type {(int)kind:x}",
    };

    /// <summary>The first bytes of a file, read without waiting (O_NONBLOCK): a FIFO put in its place after the
    /// check above gives nothing rather than a read that never returns.</summary>
    private static byte[]? ReadHeader(string path)
    {
        const int ReadOnlyNonBlocking = 0x800 | 0x80000; // O_RDONLY | O_NONBLOCK | O_CLOEXEC
        var fd = Open(path, ReadOnlyNonBlocking);
        if (fd < 0)
            return null;
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        var buffer = new byte[8];
        try
        {
            var read = RandomAccess.Read(handle, buffer, 0);
            return buffer[..read];
        }
        catch (IOException)
        {
            return null;
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);
}
