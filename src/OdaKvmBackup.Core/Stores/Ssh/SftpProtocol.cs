using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>SFTP version 3 packet types (draft-ietf-secsh-filexfer-02), as OpenSSH speaks it.</summary>
internal enum SftpPacketType : byte
{
    Init = 1, Version = 2, Open = 3, Close = 4, Read = 5, Write = 6, LStat = 7, FStat = 8, SetStat = 9, FSetStat = 10,
    OpenDir = 11, ReadDir = 12, Remove = 13, MkDir = 14, RmDir = 15, RealPath = 16, Stat = 17, Rename = 18,
    Status = 101, Handle = 102, Data = 103, Name = 104, Attrs = 105, Extended = 200, ExtendedReply = 201,
}

public enum SftpStatusCode : uint
{
    Ok = 0, Eof = 1, NoSuchFile = 2, PermissionDenied = 3, Failure = 4, BadMessage = 5, NoConnection = 6,
    ConnectionLost = 7, OpUnsupported = 8,
}

[Flags]
internal enum SftpOpenFlags : uint
{
    Read = 0x01, Write = 0x02, Append = 0x04, Create = 0x08, Truncate = 0x10,
    /// <summary>With <see cref="Create"/>: fail if the name exists (O_EXCL; never follows a symbolic link).</summary>
    Exclusive = 0x20,
}

/// <summary>A file's attributes; a null member was not sent (or is not to be set).</summary>
internal sealed record SftpAttributes
{
    private const uint FlagSize = 0x1, FlagUidGid = 0x2, FlagPermissions = 0x4, FlagTimes = 0x8, FlagExtended = 0x80000000;
    private const uint TypeMask = 0xF000, TypeDirectory = 0x4000, TypeRegular = 0x8000, TypeSymlink = 0xA000;

    public long? Size { get; init; }
    public uint? Uid { get; init; }
    public uint? Gid { get; init; }

    /// <summary>st_mode: the file type bits and the permission bits.</summary>
    public uint? Permissions { get; init; }
    public DateTime? AccessTimeUtc { get; init; }
    public DateTime? ModifiedTimeUtc { get; init; }

    public bool IsDirectory => (Permissions & TypeMask) == TypeDirectory;
    public bool IsRegularFile => (Permissions & TypeMask) == TypeRegular;
    public bool IsSymbolicLink => (Permissions & TypeMask) == TypeSymlink;
    public UnixFileMode Mode => (UnixFileMode)((Permissions ?? 0) & 0xFFF);

    public static SftpAttributes WithMode(UnixFileMode mode) => new() { Permissions = (uint)mode };

    internal void WriteTo(SftpPacketWriter writer)
    {
        var flags = (Size is null ? 0 : FlagSize) | (Uid is null || Gid is null ? 0 : FlagUidGid)
            | (Permissions is null ? 0 : FlagPermissions) | (AccessTimeUtc is null || ModifiedTimeUtc is null ? 0 : FlagTimes);
        writer.WriteUInt32(flags);
        if (Size is { } size)
            writer.WriteUInt64((ulong)size);
        if ((flags & FlagUidGid) != 0)
        {
            writer.WriteUInt32(Uid!.Value);
            writer.WriteUInt32(Gid!.Value);
        }
        if (Permissions is { } permissions)
            writer.WriteUInt32(permissions);
        if ((flags & FlagTimes) != 0)
        {
            writer.WriteUInt32((uint)new DateTimeOffset(AccessTimeUtc!.Value).ToUnixTimeSeconds());
            writer.WriteUInt32((uint)new DateTimeOffset(ModifiedTimeUtc!.Value).ToUnixTimeSeconds());
        }
    }

    internal static SftpAttributes ReadFrom(ref SftpPacketReader reader)
    {
        var flags = reader.ReadUInt32();
        var attributes = new SftpAttributes
        {
            Size = (flags & FlagSize) != 0 ? (long)reader.ReadUInt64() : null,
            Uid = (flags & FlagUidGid) != 0 ? reader.ReadUInt32() : null,
            Gid = (flags & FlagUidGid) != 0 ? reader.ReadUInt32() : null,
            Permissions = (flags & FlagPermissions) != 0 ? reader.ReadUInt32() : null,
            AccessTimeUtc = (flags & FlagTimes) != 0 ? DateTime.UnixEpoch.AddSeconds(reader.ReadUInt32()) : null,
            ModifiedTimeUtc = (flags & FlagTimes) != 0 ? DateTime.UnixEpoch.AddSeconds(reader.ReadUInt32()) : null,
        };
        if ((flags & FlagExtended) != 0)
        {
            var count = reader.ReadUInt32();
            for (var i = 0; i < count; i++)
            {
                reader.ReadBytes();
                reader.ReadBytes();
            }
        }
        return attributes;
    }
}

/// <summary>One entry of a folder listing.</summary>
internal sealed record SftpDirectoryEntry(string Name, SftpAttributes Attributes);

/// <summary>What statvfs@openssh.com reports about the file system that holds a path.</summary>
internal sealed record SftpFileSystemInfo(ulong BlockSize, ulong FragmentSize, ulong Blocks, ulong FreeBlocks, ulong AvailableBlocks)
{
    /// <summary>Bytes an unprivileged user may still write: f_bavail * f_frsize.</summary>
    public long AvailableBytes => (long)Math.Min(long.MaxValue, AvailableBlocks * FragmentSize);
}
